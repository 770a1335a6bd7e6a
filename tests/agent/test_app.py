"""The composition root's own checks, before any service starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.app import create_app
from agent.cli import main
from agent.settings import Settings


async def test_a_data_dir_whose_parents_do_not_exist_is_created(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "yet" / "there"
    driftline = create_app(Settings(_env_file=None, data_dir=data_dir))
    # What Faust does first at start, and where a missing parent ended the worker with a traceback.
    await driftline.app.on_first_start()
    assert data_dir.is_dir() and Path(driftline.app.conf.tabledir).is_dir()


def test_a_data_dir_that_cannot_be_created_is_reported_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["run", "--data-dir", str(blocker / "state"), "--models", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"driftline run: error: the data directory {blocker / 'state'} cannot be created")
    assert "Traceback" not in err


@pytest.mark.parametrize("fleet", [True, False], ids=["fleet", "no-fleet"])
def test_whoever_publishes_an_alert_publishes_its_incident_record_with_it(
    tmp_path: Path, fleet: bool
) -> None:
    # The serving loop (a worker's own alerts; every alert without fleet monitoring) and the models'
    # monitor take the incident store's queued records into the produce request of their alerts
    # (tests/integration/test_incidents_kafka.py has both on the broker).
    settings = Settings.model_validate({"data_dir": tmp_path, "monitoring": {"fleet": fleet}})
    driftline = create_app(settings)
    store = driftline.incidents.store
    assert driftline.serving.queued is store
    if fleet:
        assert driftline.fleet_monitor is not None and driftline.fleet_monitor.incidents is store
    else:
        assert driftline.fleet_monitor is None
