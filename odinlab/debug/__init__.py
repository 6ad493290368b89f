"""Debugging questions asked of a model and its store; one module per question."""
