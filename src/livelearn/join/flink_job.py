"""Runs a Flink SQL job in PyFlink's own venv: ``python flink_job.py JOB.json``.

JOB.json is ``{"config": {key: value}, "tables": [DDL...], "inserts": [INSERT...]}``,
as join.flink.FlinkJob writes it. The tables and views are created in a streaming
TableEnvironment made with that configuration (``execution.target: remote`` with
``rest.address``/``rest.port`` submits the job to a running Flink cluster instead of
a local mini-cluster), then every INSERT runs in one statement set, and the script
waits for the job to end (a bounded job ends when its sources do). On SIGTERM or
SIGINT it cancels the job first (on a cluster the job would outlive this process),
then exits with 143; if its parent (``livelearn join``) is gone, killed, it also ends
its session (PyFlink's JVM), which the parent would have. It prints ``JOB_ID=...``
once the job is submitted. This file
imports nothing of livelearn: PyFlink's venv does not have it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

_stop: list[int] = []
_PARENT = os.getppid()


def run(job: dict[str, Any]) -> int:
    from py4j.protocol import Py4JJavaError
    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment

    config = Configuration()
    for key, value in job["config"].items():
        config.set_string(key, value)
    settings = EnvironmentSettings.new_instance().in_streaming_mode() \
        .with_configuration(config).build()
    env = TableEnvironment.create(settings)
    for key, value in job["config"].items():
        env.get_config().set(key, value)
    for statement in job["tables"]:
        env.execute_sql(statement)
    statements = env.create_statement_set()
    for insert in job["inserts"]:
        statements.add_insert_sql(insert)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda n, frame: _stop.append(n))
    result = statements.execute()
    client = result.get_job_client()
    if client is not None:
        print(f"JOB_ID={client.get_job_id()}", flush=True)
    while True:
        if _stop:
            if client is not None:
                client.cancel().result()
            if os.getppid() != _PARENT:  # livelearn join was killed: no one else ends it
                os.killpg(0, signal.SIGKILL)
            return 143
        try:
            result.wait(500)
            return 0
        except Py4JJavaError as e:
            if "TimeoutException" not in e.java_exception.getClass().getName():
                raise


if __name__ == "__main__":
    sys.exit(run(json.loads(Path(sys.argv[1]).read_text())))
