"""The suite's fixtures, each in its plugin under ``tests/plugins/``; helpers tests import are in
``tests/support/``."""

pytest_plugins = [
    "tests.plugins.servers",
    "tests.plugins.timescale",
    "tests.plugins.daemons",
    "tests.plugins.loop",
    "tests.plugins.core",
]
