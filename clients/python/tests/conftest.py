"""The client's tests run against a live vsearch server: the project's own test fixtures, reused."""

from tests.conftest import data_dir, embedded_server, server  # noqa: F401  (fixtures)
from tests.helpers import start_server  # noqa: F401  (the server factory, for these tests)
