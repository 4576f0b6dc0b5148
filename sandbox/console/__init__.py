"""The web console at ``/console``: server-rendered pages for enterprises, providers and
security officers, on the same services as the API (``docs/console.md``)."""
