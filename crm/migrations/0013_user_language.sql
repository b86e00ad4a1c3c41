-- A person's language for the pages; NULL means "as the browser asks, else the company's setting".
ALTER TABLE users ADD COLUMN language text CHECK (language IN ('ru', 'en'));
