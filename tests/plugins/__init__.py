"""pytest plugins holding the suite's fixtures, registered once by ``pytest_plugins`` in the conftest at
the root of ``tests/``. Tests never import from here: what they import (helpers, classes) is in
``tests.support``."""
