"""What the tests share: paths, servers and Bentos on free ports, a throwaway PKI, raw HTTP,
test models and data. Test modules import from here, never from one another; the fixtures
built on these helpers live in tests/conftest.py."""
