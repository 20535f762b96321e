"""The tape: its struct-of-arrays layout and checks (``tape``) and saved tape files (``io``)."""
