-- A user's phones by device name (SIP/150010001, PJSIP/acc7001), a version on users for stale-edit checks,
-- and a NOTIFY on 'callboard_devices' whenever the device → extension map may have changed.

ALTER TABLE users ADD COLUMN version integer NOT NULL DEFAULT 1;

-- The primary key makes a device one person's: two users cannot both claim SIP/150010001.
CREATE TABLE user_devices (
    device text PRIMARY KEY CHECK (device ~ '^[A-Za-z][A-Za-z0-9]{0,15}/[A-Za-z0-9_.+-]{1,64}$'),
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_devices_user ON user_devices (user_id);

-- The payload names what changed ('device:SIP/150010001' or 'user:7'); listeners may simply reload the map.
CREATE FUNCTION callboard_notify_devices() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'user_devices' THEN
        IF TG_OP <> 'INSERT' THEN PERFORM pg_notify('callboard_devices', 'device:' || OLD.device); END IF;
        IF TG_OP <> 'DELETE' THEN PERFORM pg_notify('callboard_devices', 'device:' || NEW.device); END IF;
    ELSE
        PERFORM pg_notify('callboard_devices', 'user:' || NEW.id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER user_devices_notify AFTER INSERT OR UPDATE OR DELETE ON user_devices
    FOR EACH ROW EXECUTE FUNCTION callboard_notify_devices();
-- The map shows active users' extensions: a change of either changes what a device maps to. (Deleting a user
-- deletes their devices, which notifies through the trigger above.)
CREATE TRIGGER users_devices_notify AFTER UPDATE OF extension, active ON users
    FOR EACH ROW WHEN (OLD.extension IS DISTINCT FROM NEW.extension OR OLD.active IS DISTINCT FROM NEW.active)
    EXECUTE FUNCTION callboard_notify_devices();
