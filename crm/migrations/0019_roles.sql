-- Two more kinds of people: the accountant (sees and enters money) and the warehouse (receives, writes off,
-- ships and marks goods made or received). Both see every client's deals and money, as the head does.
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check
    CHECK (role IN ('manager', 'head', 'admin', 'accountant', 'warehouse'));
