"""Agent modules that break at import, as a careless or hostile tenant's would.

Imported only by pools' children (`tests/test_pools.py`), never by the test process.
"""
