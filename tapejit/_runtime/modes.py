"""What a batch replay computes, one code per mode, shared by the CPU batch engine and the
CUDA target (their drivers take the mode as an argument)."""
MODE_VALUES, MODE_GRAD, MODE_VJP, MODE_JVP, MODE_HVP = 0, 1, 2, 3, 4
