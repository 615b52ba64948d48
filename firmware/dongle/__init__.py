"""The dongle firmware: ELM327 driver, poll plan and scheduler, and the parts around them."""
