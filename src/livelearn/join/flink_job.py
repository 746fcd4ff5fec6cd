"""Runs a Flink SQL job in PyFlink's own venv: ``python flink_job.py JOB.json``.

JOB.json is ``{"config": {key: value}, "tables": [DDL...], "inserts": [INSERT...]}``,
as join.flink.FlinkJob writes it. The tables and views are created in a streaming
TableEnvironment, then every INSERT runs in one statement set, and the script waits
for the job to end (a bounded job ends when its sources do). This file imports
nothing of livelearn: PyFlink's venv does not have it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def run(job: dict[str, Any]) -> None:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    for key, value in job["config"].items():
        env.get_config().set(key, value)
    for statement in job["tables"]:
        env.execute_sql(statement)
    statements = env.create_statement_set()
    for insert in job["inserts"]:
        statements.add_insert_sql(insert)
    statements.execute().wait()


if __name__ == "__main__":
    run(json.loads(Path(sys.argv[1]).read_text()))
