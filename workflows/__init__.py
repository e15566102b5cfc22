"""CellScope's pipelines, Streamlit-free: the per-image unit and the one image loop, the Cell map and
Explain pipelines, and the command line. Imports core/ and models/ only; the pages (through
components/) and the CLI call the same functions."""
