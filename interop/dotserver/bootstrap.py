"""Create the database, a user and the clients (password, public PKCE, client credentials, device); print them as JSON.

Run as ``python -m dotserver.bootstrap`` with DJANGO_SETTINGS_MODULE=dotserver.settings.
"""

import json
import sys

import django


def main() -> None:
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from oauth2_provider.models import Application

    call_command("migrate", verbosity=0, interactive=False)
    user = get_user_model().objects.create_user("alice", password="alice-pw")
    secret = "interop-client-secret"
    app = Application.objects.create(
        name="interop",
        client_id="interop-client",
        client_secret=secret,  # hashed on save; the plain value is what the client sends
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_PASSWORD,
        user=user,
    )
    # A public client for the browser login (authorization code + PKCE, RFC 8252 loopback redirect:
    # DOT accepts any port for a registered http://127.0.0.1 redirect URI).
    Application.objects.create(
        name="interop-cli",
        client_id="interop-cli",
        client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris="http://127.0.0.1/callback",
        user=user,
        skip_authorization=False,  # show the consent page
    )
    # A service account: the client credentials grant (RFC 6749 §4.4), no user in the loop.
    service_secret = "interop-service-secret"
    Application.objects.create(
        name="interop-service",
        client_id="interop-service",
        client_secret=service_secret,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        user=user,
    )
    # A public client for the device login (RFC 8628): no secret, no redirect URI.
    Application.objects.create(
        name="interop-device",
        client_id="interop-device",
        client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_DEVICE_CODE,
        user=user,
    )
    client = {"client_id": app.client_id, "client_secret": secret, "username": "alice", "password": "alice-pw"}
    service = {"service_client_id": "interop-service", "service_client_secret": service_secret}
    device = {"device_client_id": "interop-device"}
    json.dump({**client, "public_client_id": "interop-cli", **service, **device}, sys.stdout)


if __name__ == "__main__":
    main()
