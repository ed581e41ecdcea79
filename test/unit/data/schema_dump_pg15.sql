--
-- PostgreSQL database dump
--

\restrict 9QbVgqJwBPf8on11l2DcITeJzkBBQiPQrHy4hK2NnOee9PdLd56wi9KkE4okye6

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: billing; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA billing;


--
-- Name: SCHEMA billing; Type: COMMENT; Schema: -; Owner: -
--

COMMENT ON SCHEMA billing IS 'money /* not a comment */ -- nor this';


--
-- Name: citext; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;


--
-- Name: EXTENSION citext; Type: COMMENT; Schema: -; Owner: -
--

COMMENT ON EXTENSION citext IS 'data type for case-insensitive character strings';


--
-- Name: address; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.address AS (
	street text,
	city text,
	zip text
);


--
-- Name: order_status; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.order_status AS ENUM (
    'new',
    'paid',
    'shipped'
);


--
-- Name: positive_amount; Type: DOMAIN; Schema: public; Owner: -
--

CREATE DOMAIN public.positive_amount AS numeric(12,2)
	CONSTRAINT positive_amount_check CHECK ((VALUE > (0)::numeric));


--
-- Name: invoice_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.invoice_seq
    START WITH 1000
    INCREMENT BY 5
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


SET default_table_access_method = heap;

--
-- Name: orders; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.orders (
    id bigint NOT NULL,
    customer_id bigint NOT NULL,
    status public.order_status DEFAULT 'new'::public.order_status NOT NULL,
    amount public.positive_amount,
    total numeric(14,4),
    tax numeric(14,4) GENERATED ALWAYS AS ((total * 0.2)) STORED,
    details jsonb,
    blob bytea,
    invoice_no bigint DEFAULT nextval('public.invoice_seq'::regclass),
    updated_at timestamp with time zone,
    CONSTRAINT orders_total_check CHECK ((total >= (0)::numeric))
);

ALTER TABLE ONLY public.orders REPLICA IDENTITY FULL;


--
-- Name: TABLE orders; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.orders IS 'Orders; one per checkout';


--
-- Name: COLUMN orders.status; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.orders.status IS 'it''s the state';


--
-- Name: order_total(public.orders); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.order_total(o public.orders) RETURNS numeric
    LANGUAGE sql STABLE
    BEGIN ATOMIC
 SELECT ((o).total + COALESCE((o).tax, (0)::numeric));
 SELECT
         CASE
             WHEN ((o).total > (0)::numeric) THEN (o).total
             ELSE (0)::numeric
         END AS "case";
END;


--
-- Name: touch_updated_at(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
  NEW.updated_at := now(); -- a comment; with a semicolon
  RETURN NEW;
END;
$$;


--
-- Name: invoices; Type: TABLE; Schema: billing; Owner: -
--

CREATE TABLE billing.invoices (
    id integer DEFAULT nextval('public.invoice_seq'::regclass) NOT NULL,
    order_id bigint,
    amounts numeric[]
);


--
-- Name: open_orders; Type: VIEW; Schema: billing; Owner: -
--

CREATE VIEW billing.open_orders AS
 SELECT orders.id,
    orders.customer_id
   FROM public.orders
  WHERE (orders.status <> 'shipped'::public.order_status);


--
-- Name: Order Items; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public."Order Items" (
    "Id" integer NOT NULL,
    "select" text,
    order_id bigint,
    qty integer,
    CONSTRAINT "Order Items_qty_check" CHECK ((qty > 0))
);


--
-- Name: audit_log; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.audit_log (
    id bigint NOT NULL,
    note text
);


--
-- Name: audit_log_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.audit_log_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: audit_log_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.audit_log_id_seq OWNED BY public.audit_log.id;


--
-- Name: customers; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.customers (
    id bigint NOT NULL,
    email public.citext NOT NULL,
    name text DEFAULT 'it''s; unnamed'::text,
    home public.address,
    tags text[] DEFAULT '{}'::text[],
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: customers_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.customers ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.customers_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.events (
    id bigint NOT NULL,
    happened_at timestamp with time zone NOT NULL,
    payload jsonb
)
PARTITION BY RANGE (happened_at);


--
-- Name: events_2024; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.events_2024 (
    id bigint NOT NULL,
    happened_at timestamp with time zone NOT NULL,
    payload jsonb
);


--
-- Name: events_2025; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.events_2025 (
    id bigint NOT NULL,
    happened_at timestamp with time zone NOT NULL,
    payload jsonb
);


--
-- Name: orders_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.orders_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: orders_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.orders_id_seq OWNED BY public.orders.id;


--
-- Name: settings; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.settings (
    key text NOT NULL,
    value text
);


--
-- Name: events_2024; Type: TABLE ATTACH; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events ATTACH PARTITION public.events_2024 FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2025-01-01 00:00:00+00');


--
-- Name: events_2025; Type: TABLE ATTACH; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events ATTACH PARTITION public.events_2025 FOR VALUES FROM ('2025-01-01 00:00:00+00') TO ('2026-01-01 00:00:00+00');


--
-- Name: audit_log id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit_log ALTER COLUMN id SET DEFAULT nextval('public.audit_log_id_seq'::regclass);


--
-- Name: orders id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.orders ALTER COLUMN id SET DEFAULT nextval('public.orders_id_seq'::regclass);


--
-- Name: invoices invoices_pkey; Type: CONSTRAINT; Schema: billing; Owner: -
--

ALTER TABLE ONLY billing.invoices
    ADD CONSTRAINT invoices_pkey PRIMARY KEY (id);


--
-- Name: Order Items Order Items_order_id_select_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public."Order Items"
    ADD CONSTRAINT "Order Items_order_id_select_key" UNIQUE (order_id, "select");


--
-- Name: Order Items Order Items_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public."Order Items"
    ADD CONSTRAINT "Order Items_pkey" PRIMARY KEY ("Id");


--
-- Name: audit_log audit_log_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit_log
    ADD CONSTRAINT audit_log_pkey PRIMARY KEY (id);


--
-- Name: customers customers_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.customers
    ADD CONSTRAINT customers_pkey PRIMARY KEY (id);


--
-- Name: events events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (id, happened_at);


--
-- Name: events_2024 events_2024_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events_2024
    ADD CONSTRAINT events_2024_pkey PRIMARY KEY (id, happened_at);


--
-- Name: events_2025 events_2025_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events_2025
    ADD CONSTRAINT events_2025_pkey PRIMARY KEY (id, happened_at);


--
-- Name: orders orders_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.orders
    ADD CONSTRAINT orders_pkey PRIMARY KEY (id);


--
-- Name: customers_email_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX customers_email_idx ON public.customers USING btree (lower((email)::text));


--
-- Name: events_payload_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_payload_idx ON ONLY public.events USING gin (payload);


--
-- Name: events_2024_payload_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_2024_payload_idx ON public.events_2024 USING gin (payload);


--
-- Name: events_2025_payload_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_2025_payload_idx ON public.events_2025 USING gin (payload);


--
-- Name: orders_open_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX orders_open_idx ON public.orders USING btree (customer_id) WHERE (status <> 'shipped'::public.order_status);


--
-- Name: INDEX orders_open_idx; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON INDEX public.orders_open_idx IS 'open; orders';


--
-- Name: settings_key_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX settings_key_idx ON public.settings USING btree (key);

ALTER TABLE ONLY public.settings REPLICA IDENTITY USING INDEX settings_key_idx;


--
-- Name: events_2024_payload_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_payload_idx ATTACH PARTITION public.events_2024_payload_idx;


--
-- Name: events_2024_pkey; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_pkey ATTACH PARTITION public.events_2024_pkey;


--
-- Name: events_2025_payload_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_payload_idx ATTACH PARTITION public.events_2025_payload_idx;


--
-- Name: events_2025_pkey; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_pkey ATTACH PARTITION public.events_2025_pkey;


--
-- Name: customers customers_audit; Type: RULE; Schema: public; Owner: -
--

CREATE RULE customers_audit AS
    ON DELETE TO public.customers DO ( INSERT INTO public.audit_log (note)
  VALUES ('deleted; one'::text);
 INSERT INTO public.audit_log (note)
  VALUES ('twice'::text);
);


--
-- Name: orders orders_touch; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER orders_touch BEFORE UPDATE ON public.orders FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();


--
-- Name: invoices invoices_order_id_fkey; Type: FK CONSTRAINT; Schema: billing; Owner: -
--

ALTER TABLE ONLY billing.invoices
    ADD CONSTRAINT invoices_order_id_fkey FOREIGN KEY (order_id) REFERENCES public.orders(id);


--
-- Name: Order Items Order Items_order_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public."Order Items"
    ADD CONSTRAINT "Order Items_order_id_fkey" FOREIGN KEY (order_id) REFERENCES public.orders(id) ON DELETE CASCADE;


--
-- Name: orders orders_customer_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.orders
    ADD CONSTRAINT orders_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES public.customers(id);


--
-- Name: invoices; Type: ROW SECURITY; Schema: billing; Owner: -
--

ALTER TABLE billing.invoices ENABLE ROW LEVEL SECURITY;

--
-- Name: invoices invoices_all; Type: POLICY; Schema: billing; Owner: -
--

CREATE POLICY invoices_all ON billing.invoices USING (true);


--
-- Name: everything; Type: PUBLICATION; Schema: -; Owner: -
--

CREATE PUBLICATION everything FOR ALL TABLES WITH (publish = 'insert, update, delete, truncate');


--
-- PostgreSQL database dump complete
--

\unrestrict 9QbVgqJwBPf8on11l2DcITeJzkBBQiPQrHy4hK2NnOee9PdLd56wi9KkE4okye6

