"""Report-ready tables (CSV + Markdown + LaTeX) and figures (PNG + PDF)."""
