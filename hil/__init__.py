"""Hardware-in-the-loop kit: the vehicle on the ELM327 emulator, the link model,
the simulated BLE radio, the scenario runner and the benchmarks."""
