"""The benchmark harness behind ``tapejit bench`` (``harness``) and its workloads."""
