"""Online monitors: deterministic checks run after every step, before the next model call."""
