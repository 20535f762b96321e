"""What a user writes: ``Tensor`` and eager autograd (``tensor``), the numpy-style functions
(``numpy_api``, ``composite``), numpy's protocols, in-place updates, and ``trace`` with its
``Function`` (``function``)."""
