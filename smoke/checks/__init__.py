"""The checks: environment, model, attention; each a module of functions returning Check results."""
