"""Demo and test tools: the sample data generator and the Export API emulator."""
