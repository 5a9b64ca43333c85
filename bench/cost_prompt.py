"""The one request bench/run_cost.py sends both ways: constants only, cheap to import anywhere.

(Both sides' workflow code imports it; a heavier module would count against whichever side's
sandbox imports it again for each run.)
"""

SYSTEM = "You are a concise assistant."
PROMPT = "Name three colours of the sea."
TOKENS = 16
