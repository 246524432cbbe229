"""Evaluation of dictionaries: task labels, selectivity, linear probing, atom recovery."""
