-- Tell every node when routing data changes, so in-memory routing indexes stay current (LISTEN).

CREATE FUNCTION callboard_notify_routing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'phones' THEN
        IF TG_OP <> 'INSERT' THEN PERFORM pg_notify('callboard_routing', 'phone:' || OLD.e164); END IF;
        IF TG_OP <> 'DELETE' THEN PERFORM pg_notify('callboard_routing', 'phone:' || NEW.e164); END IF;
    ELSIF TG_TABLE_NAME = 'contacts' THEN
        PERFORM pg_notify('callboard_routing', 'contact:' || coalesce(NEW.id, OLD.id));
    ELSIF TG_TABLE_NAME = 'companies' THEN
        PERFORM pg_notify('callboard_routing', 'company:' || coalesce(NEW.id, OLD.id));
    ELSIF TG_TABLE_NAME = 'users' THEN
        PERFORM pg_notify('callboard_routing', 'user:' || coalesce(NEW.id, OLD.id));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER phones_routing AFTER INSERT OR UPDATE OR DELETE ON phones
    FOR EACH ROW EXECUTE FUNCTION callboard_notify_routing();
CREATE TRIGGER contacts_routing AFTER UPDATE OF manager_id, company_id, name OR DELETE ON contacts
    FOR EACH ROW EXECUTE FUNCTION callboard_notify_routing();
CREATE TRIGGER companies_routing AFTER UPDATE OF manager_id, name OR DELETE ON companies
    FOR EACH ROW EXECUTE FUNCTION callboard_notify_routing();
CREATE TRIGGER users_routing AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION callboard_notify_routing();
