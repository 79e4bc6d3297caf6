"""The test suite: a package, so that test modules of equal names in different folders do not clash and
``tests.support`` is importable from every one of them."""
