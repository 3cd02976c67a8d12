"""Backbone selection: transferability scores (LogME, probe) and ranking of candidates under
constraints."""
