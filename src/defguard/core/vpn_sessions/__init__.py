"""VPN-client MFA: sessions that make a device a peer in a location with MFA."""
