"""An enterprise's consent: grants to providers, narrowed, extended and revoked."""
