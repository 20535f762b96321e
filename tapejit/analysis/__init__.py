"""What a tape implies without running it: the adjoint plan of the chunk reverse
(``adjoint_plan``) and Jacobian/Hessian sparsity with coloring (``sparsity``)."""
