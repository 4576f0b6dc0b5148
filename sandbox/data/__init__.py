"""Datasets: declared, uploaded and stored encrypted (the object store, each dataset's cell-key
secret), their catalogue (tiers 0 and 1), their classification and the catalogue of
important data."""
