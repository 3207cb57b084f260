"""Renderers: pandas tables of run results, to the terminal, CSV, Markdown and HTML."""
