"""HTTP views; each module is one blueprint."""
