"""What every layer may use about the process it runs in: consoles that never fail, devices."""
