# Runs first on the board. Nothing to do before main.py: the dongle keeps the
# REPL on USB for mpremote and uses UART2 for the ELM327.
