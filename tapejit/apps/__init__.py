"""Applications on top of Functions: minimizers (``minimize``) and Dask batches (``dask``)."""
