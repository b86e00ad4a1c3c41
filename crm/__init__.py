"""CRM data and rules: users, contacts, companies, phones, call log. Raw SQL lives only here."""
