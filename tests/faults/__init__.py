"""Fault injection: the store under failures of the machine (a full disk ...)."""
