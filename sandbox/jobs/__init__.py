"""Jobs from submission to outcome: submit, kinds, the queue and the workers, running them (and
tier 5's reviewed code), their outputs, refunds and leases, and the suspension of a provider
that stops them."""
