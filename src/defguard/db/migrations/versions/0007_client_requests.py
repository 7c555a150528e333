"""SQL functions for the hottest client requests: VPN-client MFA in one round trip per step.

`client_mfa_open` and `client_mfa_authorize` are the write halves of
`client-mfa/start` and `client-mfa/finish`: each takes the request's
exactly-once lock and stored result, the device's locks and the throttle,
re-checks what may have changed since Core read the rows, writes, and stores
the answer, all in the one transaction of a single statement. Core decides
everything that needs Python (the method, the code, the token) before the
call and passes it in; the functions keep the rules that must hold at
commit time.

`login_blocked` and `login_failure_add` are the one definition of the login
throttle: the web login calls them too. `device_admitted` is the admission
rule of `locations.access.allowed_pairs` for one device in one location.

The index on a location's open sessions gains the device: looking up one
device's open session through an index on the location alone read every
open session of the location, so each MFA cost more the more people were
connected.

Revision ID: 0007_client_requests
Revises: 0006_edge
"""

from alembic import op

revision = "0007_client_requests"
down_revision = "0006_edge"
branch_labels = None
depends_on = None

SQL = r"""
DROP INDEX vpn_client_session_open_idx;
CREATE INDEX vpn_client_session_open_idx ON vpn_client_session (location_id, device_id)
    WHERE ended_at IS NULL;

-- A device in a location, now: it holds an address there and, unless it is a
-- network device, its owner is active and admitted (an admin, in an allowed
-- group, or the location allows every group).
CREATE FUNCTION device_admitted(
    p_device_id bigint, p_user_id bigint, p_location_id bigint, p_network_device boolean
) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM wireguard_network_device w
        WHERE w.device_id = p_device_id AND w.wireguard_network_id = p_location_id
    ) AND (
        p_network_device
        OR EXISTS (
            SELECT 1 FROM "user" u
            WHERE u.id = p_user_id AND u.is_active AND (
                EXISTS (SELECT 1 FROM wireguard_network l
                        WHERE l.id = p_location_id AND l.allow_all_groups)
                OR EXISTS (SELECT 1 FROM group_user gu JOIN "group" g ON g.id = gu.group_id
                           WHERE gu.user_id = p_user_id AND g.is_admin)
                OR EXISTS (SELECT 1 FROM group_user gu
                           JOIN wireguard_network_allowed_group ag ON ag.group_id = gu.group_id
                           WHERE gu.user_id = p_user_id AND ag.network_id = p_location_id)
            )
        )
    )
$$;

-- Blocked while a key's `p_max` latest failures all fall within `p_window`
-- and the latest is less than `p_block` old.
CREATE FUNCTION login_blocked(
    p_keys text[], p_max integer, p_window interval, p_block interval, p_now timestamp
) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM unnest(p_keys) AS key, LATERAL (
            SELECT count(*) AS n, max(r.at) AS latest, min(r.at) AS oldest FROM (
                SELECT f.at FROM login_failure f
                WHERE f.login = key ORDER BY f.at DESC LIMIT p_max
            ) r
        ) recent
        WHERE recent.n >= p_max
          AND recent.latest - recent.oldest <= p_window
          AND p_now - recent.latest < p_block
    )
$$;

-- One failure more; rows too old to matter for the key go on the way.
CREATE FUNCTION login_failure_add(p_key text, p_now timestamp, p_keep interval)
RETURNS void LANGUAGE sql AS $$
    DELETE FROM login_failure WHERE login = p_key AND at < p_now - p_keep;
    INSERT INTO login_failure (login, at) VALUES (p_key, p_now);
$$;

-- The exactly-once step of an Edge request: a second attempt waits for the
-- first, then finds its stored answer (or nothing, if the first rolled back).
CREATE FUNCTION edge_request_claim(
    p_lock integer, p_request_id text,
    OUT stored boolean, OUT stored_status integer, OUT stored_body bytea,
    OUT stored_metadata jsonb
) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock, hashtext(p_request_id));
    SELECT e.status, e.body, e.metadata INTO stored_status, stored_body, stored_metadata
    FROM edge_request e WHERE e.request_id = p_request_id;
    stored := FOUND;
END
$$;

-- client-mfa/start in one call: the checks in the order of their answers,
-- then a new pending session replacing the device's earlier pending one in
-- the location. Core passes what it knows from the request alone (is the
-- method a known one, which location modes admit it, does this server offer
-- it) and the key formats of its locks. Outcomes: ok, replayed, no_location,
-- mfa_disabled, no_device, no_user, invalid_method, unsupported,
-- not_available, unauthorized, blocked. For ok and replayed, session_id and
-- issued_at are what Core signs into the token (a replay signs the same one),
-- and the rest is what an e-mailed code needs.
-- Locks, in this order on every path: the request, the device in the
-- location, the device's throttle key (the address's key is only checked:
-- locking it would make every client behind one NAT address wait in line).
CREATE FUNCTION client_mfa_open(
    p_request_lock integer, p_request_id text,
    p_session_lock integer, p_session_key_format text,
    p_throttle_lock integer, p_device_key_format text, p_address_key text,
    p_location_id bigint, p_pubkey text, p_method smallint,
    p_method_valid boolean, p_method_modes text, p_method_offered boolean,
    p_now timestamp, p_max_failures integer, p_window interval, p_block interval,
    OUT outcome text, OUT session_id bigint, OUT issued_at timestamp, OUT secret_key text,
    OUT location_name text, OUT email text, OUT first_name text, OUT email_secret bytea,
    OUT code_timeout integer
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
    SELECT d.id, d.user_id, d.device_type::text AS kind INTO dev
    FROM device d WHERE d.wireguard_pubkey = p_pubkey ORDER BY d.id LIMIT 1;
    IF NOT FOUND THEN outcome := 'no_device'; RETURN; END IF;
    SELECT u.email, u.first_name, u.email_mfa_secret,
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
END
$$;

-- client-mfa/finish. Core checked the code against p_secret (p_correct) and,
-- for TOTP, passes the step to claim. Outcomes: ok (the session is active
-- with p_psk, the previous one ended), wrong (failure counted and logged,
-- 401 stored), replayed, blocked, gone (the session is no longer pending),
-- denied (the device lost access; nothing written).
CREATE FUNCTION client_mfa_authorize(
    p_request_lock integer, p_request_id text, p_session_lock integer, p_session_key text,
    p_throttle_lock integer, p_device_key text, p_address_key text,
    p_session_id bigint, p_location_id bigint, p_device_id bigint, p_user_id bigint,
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

DOWN = r"""
DROP INDEX vpn_client_session_open_idx;
CREATE INDEX vpn_client_session_open_idx ON vpn_client_session (location_id)
    WHERE ended_at IS NULL;
DROP FUNCTION client_mfa_authorize;
DROP FUNCTION client_mfa_open;
DROP FUNCTION edge_request_claim;
DROP FUNCTION login_failure_add;
DROP FUNCTION login_blocked;
DROP FUNCTION device_admitted;
"""


def upgrade() -> None:
    op.execute(SQL)


def downgrade() -> None:
    op.execute(DOWN)
