"""Neural-network building blocks shared by the methods (NNX, channels-last)."""
