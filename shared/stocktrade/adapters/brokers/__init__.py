"""Brokers: the simulated (paper) broker over the shared fill rules."""
