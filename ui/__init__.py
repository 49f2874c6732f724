"""The Streamlit reviewer app (issue 3: not built yet).

Rule for this package: it calls `govern.service.Govern` only — no SQL, no torch —
so that the UI and the CLI share one implementation of every action.
"""
