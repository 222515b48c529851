"""Forty realistic tool schemas of a retail support agent, six of which its workflow really calls.

Shared by `bench/router/trim_tools.py` (pure trimming replay) and the gateway's end-to-end replay,
so both measure the same catalogue. Schemas follow the OpenAI `tools` format.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TOOLS", "USED_TOOLS", "tool"]


def _p(kind: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "description": description, **extra}


def tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """One function tool in the OpenAI format."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


_ORDER_ID = _p("string", "Order identifier as shown on the receipt, for example `ORD-2024-118822`.")
_CUSTOMER_ID = _p("string", "Customer identifier from `lookup_customer`.")
_EMAIL = _p("string", "Email address of the customer.", format="email")
_SKU = _p("string", "Stock keeping unit of the product, for example `SKU-44821-BLK-M`.")
_REASON = _p("string", "Short free-text reason, quoted from the customer where possible.")
_ADDRESS = _p(
    "object",
    "Postal address.",
    properties={
        "line1": _p("string", "Street and number."),
        "line2": _p("string", "Apartment, suite, floor (optional)."),
        "city": _p("string", "City."),
        "postal_code": _p("string", "Postal or ZIP code."),
        "country": _p("string", "ISO 3166-1 alpha-2 country code.", pattern="^[A-Z]{2}$"),
    },
    required=["line1", "city", "postal_code", "country"],
)

TOOLS: list[dict[str, Any]] = [
    # --- the six the workflow uses ---
    tool(
        "lookup_customer",
        "Find a customer by email or phone; returns id, name, tier and open orders.",
        {"email": _EMAIL, "phone": _p("string", "Phone number in E.164 format.")},
        [],
    ),
    tool(
        "get_order_status",
        "Current status, carrier, tracking number and estimated delivery of an order.",
        {"order_id": _ORDER_ID},
        ["order_id"],
    ),
    tool(
        "issue_refund",
        "Refund all or part of an order to the original payment method. Needs a reason.",
        {
            "order_id": _ORDER_ID,
            "amount": _p("number", "Amount in the order currency; omit for a full refund.", minimum=0),
            "reason": _REASON,
        },
        ["order_id", "reason"],
    ),
    tool(
        "update_shipping_address",
        "Change the delivery address of an order that has not shipped yet.",
        {"order_id": _ORDER_ID, "address": _ADDRESS},
        ["order_id", "address"],
    ),
    tool(
        "create_return_label",
        "Create a prepaid return label for items of a delivered order.",
        {
            "order_id": _ORDER_ID,
            "skus": _p("array", "Items to return.", items=_SKU),
            "reason": _p(
                "string",
                "Return reason.",
                enum=["damaged", "wrong_item", "too_small", "too_large", "not_as_described", "changed_mind"],
            ),
        },
        ["order_id", "skus", "reason"],
    ),
    tool(
        "escalate_to_human",
        "Hand the conversation to a human agent with a summary; use when policy requires.",
        {
            "summary": _p("string", "Two or three sentences for the human agent."),
            "priority": _p("string", "Queue priority.", enum=["low", "normal", "high", "urgent"]),
        },
        ["summary"],
    ),
    # --- the other thirty-four: offered on every request, never called by this workflow ---
    tool(
        "search_products",
        "Full-text search over the product catalogue with optional filters.",
        {
            "query": _p("string", "Search words."),
            "category": _p("string", "Category slug."),
            "max_price": _p("number", "Upper price bound."),
            "in_stock": _p("boolean", "Only items in stock."),
        },
        ["query"],
    ),
    tool(
        "get_product_details",
        "Full details of one product: description, sizes, materials, care, price.",
        {"sku": _SKU},
        ["sku"],
    ),
    tool(
        "check_inventory",
        "Stock per warehouse and size for a product.",
        {"sku": _SKU, "warehouse": _p("string", "Warehouse code, for example `AMS-1`.")},
        ["sku"],
    ),
    tool(
        "reserve_inventory",
        "Hold stock for a customer for up to 48 hours.",
        {"sku": _SKU, "quantity": _p("integer", "Units to hold.", minimum=1), "customer_id": _CUSTOMER_ID},
        ["sku", "quantity", "customer_id"],
    ),
    tool(
        "create_order",
        "Place a new order on behalf of the customer, charged to a saved payment method.",
        {
            "customer_id": _CUSTOMER_ID,
            "items": _p(
                "array",
                "Lines of the order.",
                items=_p(
                    "object",
                    "One line.",
                    properties={"sku": _SKU, "quantity": _p("integer", "Units.", minimum=1)},
                    required=["sku", "quantity"],
                ),
            ),
            "shipping_address": _ADDRESS,
            "payment_method_id": _p("string", "Saved payment method id."),
        },
        ["customer_id", "items", "payment_method_id"],
    ),
    tool(
        "cancel_order",
        "Cancel an order that has not shipped; refunds automatically.",
        {"order_id": _ORDER_ID, "reason": _REASON},
        ["order_id", "reason"],
    ),
    tool(
        "apply_discount_code",
        "Apply a promotional code to an open order or cart.",
        {"order_id": _ORDER_ID, "code": _p("string", "Promotion code, case-insensitive.")},
        ["order_id", "code"],
    ),
    tool(
        "issue_store_credit",
        "Add store credit to a customer's account as a goodwill gesture.",
        {"customer_id": _CUSTOMER_ID, "amount": _p("number", "Credit amount.", minimum=0), "reason": _REASON},
        ["customer_id", "amount", "reason"],
    ),
    tool(
        "get_loyalty_balance",
        "Points balance, tier and expiring points of a loyalty member.",
        {"customer_id": _CUSTOMER_ID},
        ["customer_id"],
    ),
    tool(
        "redeem_loyalty_points",
        "Convert loyalty points into a voucher.",
        {"customer_id": _CUSTOMER_ID, "points": _p("integer", "Points to redeem.", minimum=100)},
        ["customer_id", "points"],
    ),
    tool(
        "update_customer_profile",
        "Change name, phone, email or marketing preferences of a customer.",
        {
            "customer_id": _CUSTOMER_ID,
            "name": _p("string", "Full name."),
            "phone": _p("string", "E.164 phone."),
            "email": _EMAIL,
            "marketing_opt_in": _p("boolean", "Consent to marketing email."),
        },
        ["customer_id"],
    ),
    tool(
        "reset_password", "Send a password-reset link to the customer's email.", {"email": _EMAIL}, ["email"]
    ),
    tool(
        "delete_account",
        "Start GDPR account deletion; irreversible after 30 days.",
        {"customer_id": _CUSTOMER_ID, "confirmation": _p("boolean", "Customer confirmed explicitly.")},
        ["customer_id", "confirmation"],
    ),
    tool(
        "export_customer_data",
        "Prepare a GDPR data export and email a download link.",
        {"customer_id": _CUSTOMER_ID},
        ["customer_id"],
    ),
    tool(
        "list_payment_methods",
        "Saved cards and wallets of a customer (masked).",
        {"customer_id": _CUSTOMER_ID},
        ["customer_id"],
    ),
    tool(
        "add_payment_method",
        "Send the customer a secure link to add a card; never take card numbers in chat.",
        {"customer_id": _CUSTOMER_ID},
        ["customer_id"],
    ),
    tool(
        "get_invoice",
        "PDF invoice link for an order, with VAT breakdown.",
        {"order_id": _ORDER_ID, "vat_number": _p("string", "Business VAT number to print on the invoice.")},
        ["order_id"],
    ),
    tool(
        "schedule_delivery",
        "Choose a delivery slot for carriers that support scheduling.",
        {
            "order_id": _ORDER_ID,
            "date": _p("string", "Delivery date.", format="date"),
            "slot": _p("string", "Time window.", enum=["08-12", "12-16", "16-20"]),
        },
        ["order_id", "date", "slot"],
    ),
    tool(
        "redirect_to_pickup_point",
        "Send a parcel in transit to a pickup point instead of the home address.",
        {"order_id": _ORDER_ID, "pickup_point_id": _p("string", "Id from `find_pickup_points`.")},
        ["order_id", "pickup_point_id"],
    ),
    tool(
        "find_pickup_points",
        "Pickup points near a postal code, with opening hours.",
        {"postal_code": _p("string", "Postal code."), "country": _p("string", "ISO country code.")},
        ["postal_code", "country"],
    ),
    tool(
        "open_carrier_claim",
        "Open a lost or damaged parcel claim with the carrier.",
        {
            "order_id": _ORDER_ID,
            "kind": _p("string", "Claim kind.", enum=["lost", "damaged", "late"]),
            "photos": _p("array", "Photo URLs of the damage.", items=_p("string", "URL.", format="uri")),
        },
        ["order_id", "kind"],
    ),
    tool(
        "get_store_hours",
        "Opening hours of a physical store, including holidays.",
        {"store_id": _p("string", "Store code."), "date": _p("string", "Date to check.", format="date")},
        ["store_id"],
    ),
    tool(
        "find_nearby_stores",
        "Stores near a location, with distance and stock of a product if given.",
        {
            "postal_code": _p("string", "Postal code."),
            "sku": _SKU,
            "radius_km": _p("number", "Search radius."),
        },
        ["postal_code"],
    ),
    tool(
        "book_store_appointment",
        "Book a fitting or styling appointment in a store.",
        {
            "store_id": _p("string", "Store code."),
            "customer_id": _CUSTOMER_ID,
            "start": _p("string", "Start time.", format="date-time"),
            "service": _p("string", "Service.", enum=["fitting", "styling", "alterations"]),
        },
        ["store_id", "customer_id", "start", "service"],
    ),
    tool(
        "create_gift_card",
        "Sell a digital gift card and email it to the recipient.",
        {
            "amount": _p("number", "Value.", minimum=5),
            "recipient_email": _EMAIL,
            "message": _p("string", "Personal message, up to 300 characters.", maxLength=300),
        },
        ["amount", "recipient_email"],
    ),
    tool(
        "check_gift_card_balance",
        "Remaining balance of a gift card.",
        {"card_number": _p("string", "Gift card number."), "pin": _p("string", "Four-digit PIN.")},
        ["card_number", "pin"],
    ),
    tool(
        "subscribe_back_in_stock",
        "Email the customer when a size comes back in stock.",
        {"sku": _SKU, "email": _EMAIL},
        ["sku", "email"],
    ),
    tool(
        "get_size_recommendation",
        "Recommend a size from body measurements and the product's fit data.",
        {
            "sku": _SKU,
            "height_cm": _p("number", "Height."),
            "weight_kg": _p("number", "Weight."),
            "fit_preference": _p("string", "Preferred fit.", enum=["slim", "regular", "loose"]),
        },
        ["sku"],
    ),
    tool(
        "translate_text",
        "Translate a message for customers writing in another language.",
        {"text": _p("string", "Text to translate."), "target_language": _p("string", "BCP-47 code.")},
        ["text", "target_language"],
    ),
    tool(
        "get_exchange_rate",
        "Currency exchange rate used for refunds in another currency.",
        {"from_currency": _p("string", "ISO 4217 code."), "to_currency": _p("string", "ISO 4217 code.")},
        ["from_currency", "to_currency"],
    ),
    tool(
        "log_feedback",
        "Record product or service feedback for the quality team.",
        {
            "customer_id": _CUSTOMER_ID,
            "topic": _p("string", "Topic.", enum=["product", "delivery", "website", "staff", "other"]),
            "text": _p("string", "Feedback in the customer's words."),
        },
        ["topic", "text"],
    ),
    tool(
        "create_support_ticket",
        "Open an email ticket for follow-up outside the chat.",
        {
            "customer_id": _CUSTOMER_ID,
            "subject": _p("string", "Subject line."),
            "body": _p("string", "Ticket body."),
        },
        ["subject", "body"],
    ),
    tool(
        "send_sms",
        "Send a transactional SMS to the customer's phone.",
        {"phone": _p("string", "E.164 phone."), "text": _p("string", "Up to 160 characters.", maxLength=160)},
        ["phone", "text"],
    ),
    tool(
        "check_fraud_score",
        "Risk score of an order from the fraud service; internal use only.",
        {"order_id": _ORDER_ID},
        ["order_id"],
    ),
]

USED_TOOLS: tuple[str, ...] = (
    "lookup_customer",
    "get_order_status",
    "issue_refund",
    "update_shipping_address",
    "create_return_label",
    "escalate_to_human",
)
