"""CellScope analysis core: plain Python, no Streamlit. Run ``python -m core --help``."""

__version__ = "0.4.0"
