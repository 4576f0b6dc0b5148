"""The web server Veil runs: the REST API (``sandbox.api``) and the console
(``sandbox.console``) assembled into one FastAPI application (``app``), a server in a
thread for the demo and the tests (``thread``), and the node protocol's OpenAPI document
(``nodes_openapi``).  It sits above both, so neither imports the other's assembly."""
