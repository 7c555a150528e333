"""`client-mfa/finish` in one round trip when the same Core served `start`.

`client_mfa_open` also returns what `finish` needs to check a TOTP code and
call `client_mfa_authorize` (the device, its owner, the owner's TOTP secret),
so a Core can keep it between the two requests and skip its read.
`client_mfa_authorize` therefore re-checks, under its locks, the two facts
that only that read used to establish: the device still holds the key the
token names, and the location still asks for MFA.

Revision ID: 0008_client_mfa_one_trip
Revises: 0007_client_requests
"""

from alembic import op

from defguard.db.migrations.revision_sql import function_sql

revision = "0008_client_mfa_one_trip"
down_revision = "0007_client_requests"
branch_labels = None
depends_on = None

SQL = r"""
DROP FUNCTION client_mfa_open;
DROP FUNCTION client_mfa_authorize;

-- As in 0007, plus the device and owner facts a Core keeps for `finish`.
CREATE FUNCTION client_mfa_open(
    p_request_lock integer, p_request_id text,
    p_session_lock integer, p_session_key_format text,
    p_throttle_lock integer, p_device_key_format text, p_address_key text,
    p_location_id bigint, p_pubkey text, p_method smallint,
    p_method_valid boolean, p_method_modes text, p_method_offered boolean,
    p_now timestamp, p_max_failures integer, p_window interval, p_block interval,
    OUT outcome text, OUT session_id bigint, OUT issued_at timestamp, OUT secret_key text,
    OUT location_name text, OUT email text, OUT first_name text, OUT email_secret bytea,
    OUT code_timeout integer, OUT device_id bigint, OUT user_id bigint, OUT device_name text,
    OUT network_device boolean, OUT totp_secret bytea
) LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    loc record;
    dev record;
    usr record;
    device_key text;
    stored_raw bytea;
    stored jsonb;
BEGIN
    SELECT st.secret_key, st.mfa_code_timeout_seconds INTO secret_key, code_timeout
    FROM settings st WHERE st.id = 1;
    -- edge_request_claim, written out: a nested function call costs more here.
    PERFORM pg_advisory_xact_lock(p_request_lock, hashtext(p_request_id));
    SELECT e.body INTO stored_raw FROM edge_request e WHERE e.request_id = p_request_id;
    IF FOUND THEN
        stored := convert_from(stored_raw, 'UTF8')::jsonb;
        outcome := 'replayed';
        session_id := (stored ->> 'session_id')::bigint;
        issued_at := (stored ->> 'issued_at')::timestamp;
        RETURN;
    END IF;
    SELECT l.id, l.name, l.location_mfa_mode::text AS mode INTO loc
    FROM wireguard_network l WHERE l.id = p_location_id;
    IF NOT FOUND THEN outcome := 'no_location'; RETURN; END IF;
    IF loc.mode = 'disabled' THEN outcome := 'mfa_disabled'; RETURN; END IF;
    SELECT d.id, d.user_id, d.name, d.device_type::text AS kind INTO dev
    FROM device d WHERE d.wireguard_pubkey = p_pubkey ORDER BY d.id LIMIT 1;
    IF NOT FOUND THEN outcome := 'no_device'; RETURN; END IF;
    SELECT u.email, u.first_name, u.email_mfa_secret, u.totp_secret,
           u.totp_enabled AND u.totp_secret IS NOT NULL AS totp,
           u.email_mfa_enabled AND u.email_mfa_secret IS NOT NULL AS mail
    INTO usr FROM "user" u WHERE u.id = dev.user_id;
    IF NOT FOUND THEN outcome := 'no_user'; RETURN; END IF;
    IF NOT p_method_valid THEN outcome := 'invalid_method'; RETURN; END IF;
    IF NOT loc.mode = ANY(string_to_array(p_method_modes, ',')) THEN
        outcome := 'unsupported';
        RETURN;
    END IF;
    IF NOT p_method_offered
       OR NOT (CASE p_method WHEN 0 THEN usr.totp WHEN 1 THEN usr.mail ELSE false END) THEN
        outcome := 'not_available';
        RETURN;
    END IF;
    IF NOT device_admitted(dev.id, dev.user_id, loc.id, dev.kind = 'network') THEN
        outcome := 'unauthorized';
        RETURN;
    END IF;
    device_key := format(p_device_key_format, dev.id);
    PERFORM pg_advisory_xact_lock(
        p_session_lock, hashtext(format(p_session_key_format, loc.id, dev.id)));
    PERFORM pg_advisory_xact_lock(p_throttle_lock, hashtext(device_key));
    IF login_blocked(ARRAY[device_key, p_address_key], p_max_failures, p_window, p_block, p_now)
    THEN
        outcome := 'blocked';
        RETURN;
    END IF;
    DELETE FROM vpn_client_session s
    WHERE s.location_id = loc.id AND s.device_id = dev.id
      AND s.authorized_at IS NULL AND s.ended_at IS NULL;
    INSERT INTO vpn_client_session (location_id, device_id, user_id, method, created_at)
    VALUES (loc.id, dev.id, dev.user_id, p_method, p_now)
    RETURNING id INTO session_id;
    issued_at := p_now;
    -- What the answer is made of, so that a retry signs the same token.
    INSERT INTO edge_request (request_id, method, status, body, created_at)
    VALUES (p_request_id, 'client_mfa.start', 200,
            convert_to(json_build_object('session_id', session_id, 'issued_at', p_now)::text,
                       'UTF8'),
            p_now);
    outcome := 'ok';
    location_name := loc.name;
    email := usr.email;
    first_name := usr.first_name;
    email_secret := usr.email_mfa_secret;
    device_id := dev.id;
    user_id := dev.user_id;
    device_name := dev.name;
    network_device := dev.kind = 'network';
    totp_secret := usr.totp_secret;
END
$$;

-- As in 0007, plus the outcome mfa_disabled (the location no longer asks for
-- MFA; nothing written).
CREATE FUNCTION client_mfa_authorize(
    p_request_lock integer, p_request_id text, p_session_lock integer, p_session_key text,
    p_throttle_lock integer, p_device_key text, p_address_key text,
    p_session_id bigint, p_location_id bigint, p_device_id bigint, p_user_id bigint,
    p_pubkey text,
    p_network_device boolean, p_method smallint, p_correct boolean, p_secret bytea,
    p_totp_step bigint, p_psk text, p_ok_body bytea, p_fail_body bytea, p_now timestamp,
    p_max_failures integer, p_window interval, p_block interval,
    p_keep interval, p_event_ip inet, p_event_agent text, p_location_name text,
    p_ok_text text, p_fail_text text, p_replaced text,
    OUT outcome text, OUT stored_status integer, OUT stored_body bytea
) LANGUAGE plpgsql AS $$
DECLARE
    correct boolean := p_correct;
BEGIN
    -- edge_request_claim, written out: a nested function call costs more here.
    PERFORM pg_advisory_xact_lock(p_request_lock, hashtext(p_request_id));
    SELECT e.status, e.body INTO stored_status, stored_body
    FROM edge_request e WHERE e.request_id = p_request_id;
    IF FOUND THEN
        outcome := 'replayed';
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(p_session_lock, hashtext(p_session_key));
    PERFORM pg_advisory_xact_lock(p_throttle_lock, hashtext(p_device_key));
    IF login_blocked(ARRAY[p_device_key, p_address_key], p_max_failures, p_window, p_block, p_now)
    THEN
        outcome := 'blocked';
        RETURN;
    END IF;
    PERFORM 1 FROM vpn_client_session s
    WHERE s.id = p_session_id AND s.location_id = p_location_id AND s.device_id = p_device_id
      AND s.authorized_at IS NULL AND s.ended_at IS NULL
    FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'gone';
        RETURN;
    END IF;
    -- The token is bound to a key: the device must still hold it.
    PERFORM 1 FROM device d WHERE d.id = p_device_id AND d.wireguard_pubkey = p_pubkey;
    IF NOT FOUND THEN
        outcome := 'gone';
        RETURN;
    END IF;
    PERFORM 1 FROM wireguard_network l
    WHERE l.id = p_location_id AND l.location_mfa_mode <> 'disabled';
    IF NOT FOUND THEN
        outcome := 'mfa_disabled';
        RETURN;
    END IF;
    IF correct THEN
        -- The code was checked against this secret: it must still be the user's.
        PERFORM 1 FROM "user" u
        WHERE u.id = p_user_id AND CASE WHEN p_method = 0
            THEN u.totp_enabled AND u.totp_secret = p_secret
            ELSE u.email_mfa_enabled AND u.email_mfa_secret = p_secret END;
        correct := FOUND;
    END IF;
    IF correct AND NOT device_admitted(p_device_id, p_user_id, p_location_id, p_network_device) THEN
        outcome := 'denied';
        RETURN;
    END IF;
    IF correct AND p_totp_step IS NOT NULL THEN
        -- A TOTP code is good for its whole step: only its first use counts.
        UPDATE "user" SET totp_last_step = p_totp_step
        WHERE id = p_user_id AND (totp_last_step IS NULL OR totp_last_step < p_totp_step);
        correct := FOUND;
    END IF;
    IF correct THEN
        UPDATE vpn_client_session SET ended_at = p_now, end_reason = p_replaced
        WHERE location_id = p_location_id AND device_id = p_device_id
          AND authorized_at IS NOT NULL AND ended_at IS NULL;
        UPDATE vpn_client_session SET preshared_key = p_psk, authorized_at = p_now
        WHERE id = p_session_id;
        outcome := 'ok';
    ELSE
        PERFORM login_failure_add(p_device_key, p_now, p_keep);
        IF p_address_key IS NOT NULL THEN
            PERFORM login_failure_add(p_address_key, p_now, p_keep);
        END IF;
        outcome := 'wrong';
    END IF;
    INSERT INTO activity_log_event
        (timestamp, user_id, username, location, ip, event, module, device, description)
    SELECT p_now, u.id, u.username, p_location_name, p_event_ip,
           CASE WHEN correct THEN 'vpn_client_mfa_success' ELSE 'vpn_client_mfa_failed' END,
           'vpn', p_event_agent, CASE WHEN correct THEN p_ok_text ELSE p_fail_text END
    FROM "user" u WHERE u.id = p_user_id;
    INSERT INTO edge_request (request_id, method, status, body, created_at)
    VALUES (p_request_id, 'client_mfa.finish', CASE WHEN correct THEN 200 ELSE 401 END,
            CASE WHEN correct THEN p_ok_body ELSE p_fail_body END, p_now);
END
$$;

"""


def _previous_functions() -> str:
    """0007's definitions of both functions, which a downgrade restores."""
    return "\n".join(
        function_sql("0007_client_requests", name)
        for name in ("client_mfa_open", "client_mfa_authorize")
    )


def upgrade() -> None:
    op.execute(SQL)


def downgrade() -> None:
    op.execute("DROP FUNCTION client_mfa_open; DROP FUNCTION client_mfa_authorize;")
    op.execute(_previous_functions())
