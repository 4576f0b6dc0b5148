"""The database: engine, sessions and migrations (Alembic, ``migrations/``), and the sandbox
layer's tables (datasets, versions, jobs, code requests, nodes).  It imports no domain
package."""
