"""Command-line VPN client: enroll a device through an Edge and bring its tunnels up, with MFA.

It speaks the same public Edge API as the desktop client, so a headless Linux
machine can use locations that require MFA.
"""
