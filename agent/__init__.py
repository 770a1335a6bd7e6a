"""driftline's agent: loads model packages, serves them on Kafka and REST, and watches them for drift.

One subpackage per job, dependencies pointing inward (``tests/test_layout.py`` checks it):

* :mod:`agent.models`: model packages at serving time (verify, load, encode, score);
* :mod:`agent.monitoring`: drift of inputs, outputs and error, and technical drift, as plain values;
* :mod:`agent.serving`: the Kafka serving loop, the request handler, REST;
* :mod:`agent.alerting`: the alerts agent, the incident store, the sinks;
* :mod:`agent.report`: the drift report page (``driftline report``, ``GET /report``);
* :mod:`agent.topics` and :mod:`agent.app`: topic set-up and the composition root of a worker;
* :mod:`agent.packaging` (``build`` extra) and :mod:`agent.demo` (``demo`` extra): outside the worker;
* :mod:`agent.cli`: the ``driftline`` command, one module per subcommand.

* :mod:`agent.report`: the drift report page (``driftline report``, ``GET /report``).

Cross-cutting, importable from anywhere: :mod:`agent.errors`, :mod:`agent.settings`,
:mod:`agent.metrics`, :mod:`agent.retry`, :mod:`agent.kafka`, :mod:`agent.kafka_outage`.
"""

from __future__ import annotations

__all__: list[str] = []
