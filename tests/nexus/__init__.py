"""Tests of the shared runtime plumbing (nexus/): settings loading."""
