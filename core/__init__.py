"""CellScope analysis core: plain Python, no Streamlit. Run ``python -m core --help``."""
