"""Provider clients, the warehouse and the HTTP core they share."""
