"""pytest plugins holding the suite's fixtures, registered once in ``tests/conftest.py``. Tests never
import from here: what they import (helpers, classes) is in ``tests.support``."""
